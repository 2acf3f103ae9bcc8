"""``python -m course_lib.grading``: the same as the ``course-grade`` command."""

import sys

from .cli import main

sys.exit(main())
