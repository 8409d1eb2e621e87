"""Object ids in OpenAI's style: a prefix and random hex."""

import secrets


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)
