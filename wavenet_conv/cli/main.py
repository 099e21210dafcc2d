"""The ``wavenet-conv`` command: train, score, sample, check, export.

    wavenet-conv train                      # the lecture's model, conv form, default recipe, bundled names
    wavenet-conv train --recipe lecture     # the lecture's recipe: tree form, SGD, 200k steps
    wavenet-conv score names.txt            # nats per name, under the bundled model; '-' or none reads stdin
    wavenet-conv score runs/RUN names.txt   # under a run of your own
    wavenet-conv sample -n 20 --seed 1      # from the bundled model (sample runs/RUN: from a run)
    wavenet-conv check                      # the two forms' logits on the dev split, and their speed
    wavenet-conv export runs/RUN model.onnx # the conv form as ONNX, for serving

Three modules: ``parser`` (every option, generated from ``ModelConfig`` and ``TrainConfig`` where
they are a config's fields, and the translation of the library's words into options), ``commands``
(what each command does) and ``output`` (what they print); ``main`` here runs one.

A user's mistake is one of the library's ``InputError``s (a bad names file, checkpoint, option,
argument or run folder) or an ``OSError``, reported as one line on stderr with exit status 2, in the
command line's words (``--max-len`` for ``max_len``: ``parser.in_our_words``); a training whose loss
became non-finite (``TrainingDiverged``) is one line and exit status 3; Ctrl-C is 130; anything else
is a bug and shows its traceback.
"""

from __future__ import annotations

import re
import sys

from ..device import torch_threads
from ..errors import InputError, TrainingDiverged
from .commands import COMMANDS, THREADS
from .parser import PROG, build_parser, in_our_words


def out_of_memory(e: BaseException) -> str:
    """What ran out, where ``e`` is an allocation that failed (torch's CPU or CUDA allocator, Python's
    MemoryError); "" for any other error."""
    if isinstance(e, MemoryError):
        return "MemoryError"
    asked = re.search(r"(?:can't allocate memory: you tried to allocate|Tried to allocate) ([\d.]+ ?\w*)", str(e))
    return f"{asked[1]} asked for at once" if asked else ""


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        threads = THREADS[args.command] if args.threads is None else args.threads
        with torch_threads(threads, PROG):  # the caller's setting is put back (main may run inside Python)
            COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except TrainingDiverged as e:  # not the input's fault as such, nor a bug: its own status
        print(f"{PROG} {args.command}: error: {in_our_words(e)}", file=sys.stderr)
        return 3
    except (InputError, OSError) as e:  # the user's input; anything else is a bug: its traceback shows
        print(f"{PROG} {args.command}: error: {in_our_words(e)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:  # out of memory: the size asked for, not a bug (anything else is one)
        if not out_of_memory(e):
            raise
        print(f"{PROG} {args.command}: error: out of memory ({out_of_memory(e)}): ask for less (a smaller model, "
              "batch, list or sample)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
