"""Run baseplate.py's event queue and event publisher on baseplate-mq.

baseplate.py 2.x takes ``MessageQueue`` and ``TimedOutError`` from
``baseplate.lib.message_queue`` (posix_ipc) when ``baseplate.lib.events``
and ``baseplate.sidecars.event_publisher`` are imported. Import this module
first, in the service and in the sidecar, and both use baseplate-mq instead.
"""

import os

import baseplate.lib.message_queue

from baseplate import message_queue

#: Who may use the queue. baseplate.py's own module created queues 0o644 (any
#: local user could read the events); a service and a sidecar that run as
#: different users share a group instead. 0o600 if they run as one user.
MODE = 0o660


class MessageQueue(message_queue.MessageQueue):
    """baseplate.py's ``MessageQueue(name, max_messages, max_message_size)``."""

    def __init__(self, name: str, max_messages: int, max_message_size: int) -> None:
        try:
            super().__init__(name, max_messages, max_message_size, mode=MODE, exclusive=True)
        except message_queue.QueueExistsError:
            super().__init__(name, create=False)  # the sizes are the queue's own
        else:
            # Created by this call: exactly MODE, which the umask filtered.
            os.fchmod(self.fileno(), MODE)


baseplate.lib.message_queue.MessageQueue = MessageQueue  # type: ignore[misc]
baseplate.lib.message_queue.TimedOutError = message_queue.TimedOutError  # type: ignore[misc]
