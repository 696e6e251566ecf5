"""Why a launch's vLLM ended, in words: its exit code or signal, and its log's explanation."""

from __future__ import annotations

import signal

from vllm_bootstrap.launches import Launch, LaunchState, known_cause, last_error_line


def exit_error(launch: Launch) -> str:
    """Why its vLLM ended, for `last_error`: how it ended, the log line that says why, and
    the likely fix when the cause is a known one outside vLLM."""
    code = launch.return_code
    if code is None:
        how = "exited (its exit code is unknown: it was re-adopted after a restart)"
    elif code < 0:
        how = f"was killed by {_signal_name(-code)}"
    else:
        how = f"exited with code {code}"
    if launch.state is LaunchState.READY:
        how = f"{how} after it was ready"
    line = last_error_line(launch.log_path)
    error = f"vLLM {how}: {line}" if line else f"vLLM {how} (its log is empty)"
    advice = known_cause(launch.log_path)
    return f"{error}. Likely fix: {advice}" if advice else error


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
