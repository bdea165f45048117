"""De-identifying attribute coercion: DICOM PS3.15 Annex E by ``deidentify:`` URI.

The package in layers, each a subpackage whose docstring says what it may import
(tests/test_layers.py enforces it):

* ``engine``: PS3.15 as data and the de-identifier, bytes in and bytes out;
* ``stores``: what the archive remembers (linkage, forwarding queue) behind small interfaces;
* ``rules``, ``service``: the rules, and the service that ties rules, keys and stores together;
* ``exchanges``: the DICOM exchanges that are not Orthanc's own API (C-FIND matching and
  answers, coerced queries both ways, outgoing sends);
* ``edge``: the Orthanc edge, the only modules that import ``orthanc``;
* ``checks``: what a rule set will do against an Orthanc configuration (warnings, errors);
* ``configuration``: the ``Coercion`` section and the environment, one table of keys;
* ``cli``, ``serve``: the command line.

The public names below are the engine's; importing them loads pydicom only when used.
"""

from .engine.implementation import VERSION as __version__

__all__ = [
    "Deidentifier", "DeidentificationError", "DicomError", "Keys", "Outcome", "SecretError",
    "DeidentifyURI", "Option", "URIError", "parse_uri", "__version__",
]

_PUBLIC = {
    "Deidentifier": "deidentify", "DeidentificationError": "deidentify", "Outcome": "deidentify",
    "DicomError": "dicomio", "Keys": "pseudonyms", "SecretError": "pseudonyms",
    "DeidentifyURI": "uri", "Option": "uri", "URIError": "uri", "parse_uri": "uri",
}


def __getattr__(name: str):
    # Lazy (PEP 562): `coercion serve` and the CLI's argument checks start without pydicom.
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'coercion' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".engine.{module}", __name__), name)
    globals()[name] = value
    return value
