"""The remote-execution worker: runs a REAPI cluster's actions in rootless Podman pods.

    identity.py    its name, stable bot id and directory
    bot.py         the Remote Workers (Bots) session: leases in, results out
    lease.py       one lease: inputs, the pod, the result (the task cache's format), upload
    inputs.py      the Action's blobs from the CAS, the input tree materialised
    properties.py  the Action's platform properties and Command as the project's Task
"""
