"""The Orthanc edge: the only modules that import ``orthanc``.

Callbacks that turn Orthanc's events into plain calls of the service and the exchanges, and
their answers back into what Orthanc expects; no rule logic lives here. One module per
direction: ``startup`` (configuration, registration), ``rest`` (the REST API under
/coercion), ``ingest`` (what enters), ``outgoing`` (sends and C-MOVE), ``forwarding``
(the forwarding worker: routes' forwards, in order, once), ``find`` (the C-FIND SCP), ``query`` (queries Orthanc sends), ``worklist``
(the worklist callback and /coercion/worklists), ``mpps`` (the MPPS SCP, pynetdicom in
Orthanc's process, and its forwards), ``answers``
(HTTP answers shaped like Orthanc's), ``capabilities`` (what the running SDK offers), ``state``
(what they share).

May import: ``orthanc`` and everything of the package but ``cli`` and ``serve``.
"""
