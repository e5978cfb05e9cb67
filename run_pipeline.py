"""Command-line entry point: ``python run_pipeline.py --help``."""

from pipeline.cli import main

if __name__ == "__main__":
    main()
