"""Pure helpers on mail and files, shared by the inbound and outbound stages and storage.

No database, no configuration, no I/O: functions of their input only. ``names`` makes file
names safe to store and send, ``sniff`` decides a file's media type from its bytes, ``text``
turns raw mail bytes into text, ``dsn`` reads delivery status reports (bounces).
"""
