"""Batch jobs: OpenAI's Files and Batches API, run on this box's launches, resumable.

files.py       uploaded and produced files: where their bytes live, their records
multipart.py   streaming a multipart upload straight to disk
record.py      a batch's fields and statuses, and its OpenAI shape
store.py       the batch database (files, batches, one row per request line)
validation.py  checking an input file, all or nothing, with line numbers
gates.py       how many requests each model may have in flight, shared fairly
yielding.py    batch lines making way for live requests on a launch
requests.py    sending one request line, with retries; its output line
keyed.py       a scoped key's batch lines: its limits, usage and revocation
results.py     appending results and recording progress, together
runner.py      running, cancelling, expiring and resuming batches
"""

from vllm_bootstrap.faces import lazy_face

# What other packages may use, and the module defining each.
_FACE = {
    "BatchNotFound": "service",
    "BatchRefused": "service",
    "BatchStore": "store",
    "BatchYield": "yielding",
    "BatchWriteFailed": "store",
    "Batches": "service",
    "MAX_EXPIRY_SECONDS": "files",
    "FileDirectory": "files",
    "FileExpired": "files",
    "FileExpiry": "expiry",
    "FileInUse": "files",
    "check_not_expired": "files",
    "InputFileNotFound": "service",
    "KeyedLines": "keyed",
    "ModelGates": "gates",
    "NotCancellable": "service",
    "Page": "store",
    "RequestSender": "requests",
    "RunContext": "runner",
    "RunSettings": "runner",
    "StorageFull": "multipart",
    "UploadRefused": "multipart",
    "UploadTooLarge": "multipart",
}
__all__ = sorted(_FACE)
__getattr__ = lazy_face(__name__, _FACE)
