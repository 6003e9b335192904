try:
    from pipeline.cli import main
except KeyboardInterrupt:                # Ctrl-C while the command line was still loading: one line, no traceback
    import sys

    print("error: interrupted before the command started; nothing was written", file=sys.stderr)
    sys.exit(130)

main()
