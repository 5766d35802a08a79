"""``python -m baseplate.message_queue --read|--write|--create QUEUE``: the
seed's command line, run from the package that is already imported, so that
the library is loaded once."""

from baseplate.message_queue.cli import legacy_main

legacy_main()
