"""Pure conversation logic: addresses, channels, room keys, update rules. No I/O here."""
