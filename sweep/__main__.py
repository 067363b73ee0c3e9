"""``python -m sweep`` (see sweep.cli)."""
from sweep import interrupt

interrupt.install()          # first: a Ctrl-C even during the imports below exits 130 quietly

if __name__ == "__main__":
    try:
        from sweep.cli import main
    except KeyboardInterrupt:
        interrupt.exit_now("interrupted: nothing was started")
    interrupt.leave(main())
