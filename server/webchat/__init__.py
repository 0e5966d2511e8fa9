"""Web chat: public widget keys, visitor sessions and tokens, the visitor API and the embeddable page."""
