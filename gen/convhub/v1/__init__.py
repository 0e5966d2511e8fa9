"""Generated from proto/convhub/v1 by proto/generate.py; do not edit."""
