"""Built-in task kinds; importing this package registers them."""

import pvc.worker.kinds.backups
import pvc.worker.kinds.send  # noqa: F401  (vm.send_snapshot, vm.create_mirror, vm.promote_mirror)
from pvc.worker.kinds import autobackup, automirror, selftest, storage, vm  # noqa: F401  (cluster.auto*)
from pvc.worker.kinds import snapshots as vm_snapshots  # noqa: F401  (vm.*_snapshot)
from pvc.worker.provisioner import runner as provisioner_runner  # noqa: F401  (provisioner.create)
