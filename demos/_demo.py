"""What the demos share: the output options and opening an engine on them.

Not a demo itself; each demo imports it from its own folder (``python demos/NAME.py`` puts
that folder first on ``sys.path``).
"""

from __future__ import annotations

import argparse

import streamcore

RATE = 48000


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """--device (index or name) and --null (headless)."""
    parser.add_argument("--device", type=lambda s: int(s) if s.isdigit() else s,
                        help="output device index or name")
    parser.add_argument("--null", action="store_true", help="the null sink (headless)")


def open_engine(args: argparse.Namespace, **engine_options) -> streamcore.Engine:
    """A started engine on the device (or the one named), else on the null sink, said in one
    line."""
    sink = "null" if args.null else streamcore.DeviceSink(args.device)
    engine = streamcore.Engine(RATE, sink=sink, **engine_options)
    try:
        engine.start()
    except streamcore.NoDeviceError:
        engine.close()
        print("no sound device: using the null sink (nothing is heard)")
        engine = streamcore.Engine(RATE, sink="null", **engine_options)
        engine.start()
    except BaseException:
        engine.close()
        raise
    return engine
