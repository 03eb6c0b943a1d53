"""Generated session ids: sortable by time, readable, URL-safe.

An id looks like ``20261123-004720-k3f9p``: the UTC start time to the second, then five
random characters so that sessions started in the same second differ. Ids compare in
the order their sessions started (to the second) and use only ``[0-9a-z-]``, so they pass
:func:`trio_stream.store.base.check_session_id` and are safe in URLs and file names.
"""

from __future__ import annotations

import secrets
import time
from typing import Final

# Crockford's base32 alphabet, lower case: no i, l, o or u to misread.
_ALPHABET: Final = "0123456789abcdefghjkmnpqrstvwxyz"
RANDOM_LENGTH: Final = 5


def new_session_id(now: float | None = None) -> str:
    """A fresh session id for a session starting at ``now`` (UTC epoch seconds).

    Args:
        now: the start time; the current time when None.

    Returns:
        An id such as ``20261123-004720-k3f9p``.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(RANDOM_LENGTH))
    return f"{stamp}-{suffix}"
