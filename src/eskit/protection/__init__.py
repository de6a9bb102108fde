"""Data protection: personal data sealed per subject, crypto-shredding, subject export.

Needs the ``crypto`` extra (``pip install 'eskit[crypto]'``, the ``cryptography``
package). See docs/data-protection.md for the threat model and a worked
erasure::

    from eskit.protection import LocalKeyProvider, PersonalData, protect

    store = protect(SQLiteEventStore("clinic.db"), LocalKeyProvider.from_env())
    store.append("patient-7", [PatientRegistered("p-7", name="Ada")])
    store.erase_subject("p-7")        # name now reads "[erased]", for good

The pieces: :class:`PersonalData` / :class:`PersonalFields` mark fields;
:class:`KeyProvider` (:class:`LocalKeyProvider`) holds master keys;
:class:`SubjectKeyStore` (memory, SQLite, PostgreSQL) holds the subjects'
wrapped keys; :func:`protect` returns a :class:`ProtectedEventStore`, and
:func:`eskit.protection.aio.protect` its asyncio twin.
"""

from eskit.protection.erasure import ERASURES_STREAM, SUBJECT_ERASED, Erasure
from eskit.protection.errors import DecryptionError, KeyUnavailableError
from eskit.protection.keys import (
    DEFAULT_KEYS_ENV,
    KeyProvider,
    LocalKeyProvider,
    WrappedKey,
    generate_master_key,
)
from eskit.protection.keystore import (
    CountsKeyChanges,
    InMemorySubjectKeyStore,
    Purge,
    SubjectKeyStore,
)
from eskit.protection.marking import ERASED, PersonalData, PersonalFields
from eskit.protection.snapshots import SealedSnapshotStore
from eskit.protection.store import ProtectedEventStore, protect, subject_key_store_beside
from eskit.protection.transcoder import ERASED_METADATA

__all__ = [
    "DEFAULT_KEYS_ENV",
    "ERASED",
    "ERASED_METADATA",
    "ERASURES_STREAM",
    "SUBJECT_ERASED",
    "CountsKeyChanges",
    "DecryptionError",
    "Erasure",
    "InMemorySubjectKeyStore",
    "KeyProvider",
    "KeyUnavailableError",
    "LocalKeyProvider",
    "PersonalData",
    "PersonalFields",
    "ProtectedEventStore",
    "Purge",
    "SealedSnapshotStore",
    "SubjectKeyStore",
    "WrappedKey",
    "generate_master_key",
    "protect",
    "subject_key_store_beside",
]
