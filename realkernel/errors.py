"""The one error of the bench: every failure (no qemu, a refused download, an ABI mismatch,
a kernel panic, a timeout) is a RealKernelError whose message is one line naming it."""


class RealKernelError(RuntimeError):
    pass
