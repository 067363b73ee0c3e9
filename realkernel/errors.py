"""The one error of the bench: every failure (no qemu, a refused download, an ABI mismatch,
a kernel panic, a timeout) is a RealKernelError whose message is one line naming it."""


class RealKernelError(RuntimeError):
    """``partial``: when a boot ended early (a timeout, a panic, a guest error, qemu exiting),
    what the guest printed until then (a qemu.Console), so the streams it finished before are
    not lost: ``finished`` holds their raw results (bench.run_boot) and ``streams`` their
    metrics (realkernel.run), in stream order; ``kernel`` the release that booted."""

    def __init__(self, message, partial=None):
        super().__init__(message)
        self.partial = partial
        self.finished, self.streams, self.kernel = [], [], None
