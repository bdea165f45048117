"""The exchanges that are not Orthanc's own API, as plain code: what crosses the archive.

``find`` (Orthanc's C-FIND rebuilt on its REST API: matching, answers), ``find_coercion``
(answering a peer in its de-identified world), ``find_outgoing`` (queries sent into a peer's
world and their answers), ``sends`` (send jobs), ``storescu`` (batches sent with dcmtk's
storescu), ``orthanc_api`` (Orthanc's own checks of the requests the plugin's routes stand in
for), ``worklist`` (the worklist folder and its matching), ``mpps`` (the MPPS SCP's checks, state
machine, coercion and forwarding).

May import: the standard library, pydicom, the engine, the stores, ``coercion.rules``,
``coercion.service`` and this subpackage; never ``orthanc`` (what they need of Orthanc comes
in as plain functions or objects).
"""
