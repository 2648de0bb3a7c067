"""Each trial's own log on the driver's side: attached to the trial's MLflow run when it ends.

The trial writes ``trial.log`` into its folder of the invocation's Tune storage
(``trainables/trial_log.py``); the driver, the one writer of the tracking store, reads it
from there (a remote storage: through a local copy) and logs it as the run's artifact. A
retried trial's log holds every attempt, so the last attachment is the whole story.
"""

from __future__ import annotations

import os
import tempfile

from trainables.trial_log import LOG_NAME


def attach_trial_log(client, run_id: str, trial) -> bool:
    """Log the trial's ``trial.log`` on run ``run_id``; False when the trial wrote none."""
    from pyarrow import fs as pafs

    storage = trial.storage
    path = f"{storage.trial_fs_path}/{LOG_NAME}"
    filesystem = storage.storage_filesystem
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        return False
    if isinstance(filesystem, pafs.LocalFileSystem):
        client.log_artifact(run_id, path)
        return True
    with tempfile.TemporaryDirectory(prefix="hrm-trial-log-") as tmp:
        local = os.path.join(tmp, LOG_NAME)
        pafs.copy_files(path, local, source_filesystem=filesystem)
        client.log_artifact(run_id, local)
    return True
