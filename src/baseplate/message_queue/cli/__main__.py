"""``python -m baseplate.message_queue.cli``: the ``baseplate-mq`` command."""

from baseplate.message_queue.cli import main

main()
