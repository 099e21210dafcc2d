"""The command line, ``wavenet-conv``: the one place that speaks in flags. It turns options into
library calls, and the library's errors (a function's argument, a config field) into the option the
user types.

Modules:
    main.py      main: parse, run one command, report an error in one line (exit 2, 3 or 130); the
                 console script is ``wavenet_conv.cli.main:main``
    parser.py    every option and the parser (model and training options generated from the config
                 dataclasses), and the translation of the library's words into flags
    commands.py  what train, score, sample, check and export do once their options are parsed
    output.py    what the command line prints: score rows, the closing count, samples

Imports: any layer (base < models < inference < store < training < cluster < cli, held by
tests/test_layout.py); nothing in the library imports it but ``__main__``.

Reading path: main.py (main) -> parser.py (build_parser) -> commands.py (cmd_train -> training.train)
-> output.py.
"""
