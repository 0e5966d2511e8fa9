"""Channels: one module per provider (verify + parse inbound hooks, send outbound), and the delivery worker."""
