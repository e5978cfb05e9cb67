"""Command-line entry point: ``python run_pipeline.py --help``."""

try:
    from pipeline.cli import main
except KeyboardInterrupt:  # Ctrl-C while torch and the other libraries load: no traceback
    raise SystemExit(130) from None

if __name__ == "__main__":
    main()
