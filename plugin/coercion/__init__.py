"""De-identifying attribute coercion: DICOM PS3.15 Annex E by ``deidentify:`` URI.

A pure-Python engine; it never imports Orthanc's ``orthanc`` module.
"""

__version__ = "0.1.0"

from .deidentify import DeidentificationError, Deidentifier, Outcome  # noqa: E402
from .dicomio import DicomError  # noqa: E402
from .pseudonyms import Keys, SecretError  # noqa: E402
from .uri import DeidentifyURI, Option, URIError, parse_uri  # noqa: E402

__all__ = [
    "Deidentifier", "DeidentificationError", "DicomError", "Keys", "Outcome", "SecretError",
    "DeidentifyURI", "Option", "URIError", "parse_uri", "__version__",
]
