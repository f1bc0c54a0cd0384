"""The Python client of the Telentir encrypted data plane.

    from telentir_client import Telentir

    telentir = Telentir.connect(api_key="tlk_…", api="http://127.0.0.1:8000/api")
    contact_id = telentir.contacts.create({"name": "Ada Lovelace"})
    telentir.contacts.get(contact_id)  # {"name": "Ada Lovelace", "id": "obj_…"}

Everything is encrypted and decrypted here: the server only ever sees ciphertext.
"""

from .client import Billing, Credits, Events, Telentir
from .errors import TelentirError
from .events import Event, EventStream
from .stores import StoreRepository
from .version import __version__

__all__ = [
    "Billing",
    "Credits",
    "Event",
    "EventStream",
    "Events",
    "StoreRepository",
    "Telentir",
    "TelentirError",
    "__version__",
]
