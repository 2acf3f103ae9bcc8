"""``python -m course_lib.bench {compression,multimodal,continual} [options]``."""

import sys

from . import CHAPTERS, run


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in CHAPTERS:
        print(f"usage: python -m course_lib.bench {{{','.join(CHAPTERS)}}} [chapter options]")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return run(argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
