"""Webhooks: endpoints receive the customer's events as signed POSTs (Standard Webhooks).

Deliveries are rows made from events by the fan-out and sent by the delivery
loop (`emitter.py`); signing, the retry schedule, the body format and the
outbound address policy each live in their own module.
"""
