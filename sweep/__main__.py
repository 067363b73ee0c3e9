"""``python -m sweep`` (see sweep.cli)."""
from sweep import interrupt

interrupt.install()          # first: a Ctrl-C even during the imports below exits 130 quietly

if __name__ == "__main__":
    try:
        from sweep.cli import main
    except KeyboardInterrupt:
        interrupt.exit_now("interrupted: nothing was started")
    try:
        code = main()
    except SystemExit as end:        # argparse's usage errors
        code = end.code if isinstance(end.code, int) else 2
    except BaseException:            # a bug: show it, then leave like every other exit
        import traceback

        traceback.print_exc()
        code = 1
    interrupt.leave(code)
