#!/bin/sh
# Play a file through a pipe: streamcore writes a WAV stream to stdout, aplay plays it.
#
#     sh demos/pipe_to_aplay.sh [FILE]
#
# Listen for: the file (default demos/sounds/chime.flac), played by aplay.  aplay read()s the
# pipe, so streamcore's pipe sink may hand it the output ring's own pages with vmsplice
# (--zero-copy; the default copies, in case a reader splices the pages onward as pv does),
# and its messages (progress, figures) go to stderr so they never mix with the audio.
# PLAYER replaces aplay, e.g. PLAYER="aplay -D null" on a machine without a sound card.
#
# Other readers of the same stream:
#   streamcore play song.flac --pipe | sox -t wav - -d                  # sox to the default device
#   streamcore play song.flac --pipe | ffmpeg -i - -c:a libopus song.opus   # encode on the fly
#   streamcore play song.flac --pipe | ffplay -nodisp -autoexit -          # ffmpeg's player
set -eu
here=$(dirname "$0")
file=${1:-$here/sounds/chime.flac}
python=${PYTHON:-python3}
"$python" -m streamcore play "$file" --pipe --zero-copy | ${PLAYER:-aplay}
