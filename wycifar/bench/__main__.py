"""python -m wycifar.bench [overrides]"""

from wycifar.bench import main

main()
