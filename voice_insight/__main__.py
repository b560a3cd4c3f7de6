"""`python -m voice_insight ...`: the same as the `voice-insight` console script."""

import sys

from voice_insight.cli import main

main(sys.argv[1:])
