"""`chat MODEL`: talk with a model through the server's /v1, its answers streamed as they
are written, the conversation kept (as `ollama run`); `--prompt TEXT` for one answer.

It goes through the `openai` package (the client's `openai()`), an optional dependency:
without it the command says how to install it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import click

from vllm_bootstrap.cli.options import talks_to_server
from vllm_bootstrap.cli.output import shown
from vllm_bootstrap.cli.session import CommandError, session, unreachable
from vllm_bootstrap.client import ApiError, Client

# Words that end an interactive chat (`/bye` is what `ollama run` takes).
LEAVE = ("/exit", "/bye")
NEEDS_OPENAI = (
    "`vllm-bootstrap chat` needs the openai package: "
    "pip install 'vllm-bootstrap[client]' (or pip install openai; in this project, uv sync)"
)


@click.command()
@click.argument("model")
@click.option("-p", "--prompt", metavar="TEXT", help="Send this one message, print the answer.")
@click.option("--system", metavar="TEXT", help="A system message to start the conversation.")
@talks_to_server
def chat(model: str, prompt: str | None, system: str | None) -> None:
    """Chat with MODEL, answers streamed.

    MODEL is a profile or a served name, reached through /v1. Type /exit or press Ctrl-D
    to leave; Ctrl-C stops an answer. With input piped in, each line is a message."""
    with session() as client:
        conversation = Conversation(_openai(client), client.url, model, system)
        if prompt is not None:
            conversation.ask(prompt)
            return
        interactive = sys.stdin.isatty()
        if interactive:
            print(f"{model} at {client.url}/v1; /exit or Ctrl-D to leave.", file=sys.stderr)
        for text in _messages(interactive):
            if text in LEAVE:
                return
            conversation.ask(text, interactive)


class Conversation:
    """The messages so far and how to stream the next answer."""

    def __init__(self, openai: Any, url: str, model: str, system: str | None) -> None:
        self._openai, self._url, self._model = openai, url, model
        self.messages: list[dict[str, str]] = []
        if system:
            self.messages.append({"role": "system", "content": system})

    def ask(self, text: str, interactive: bool = False) -> None:
        """Send `text`, print the answer as it streams, keep both. Ctrl-C on a terminal
        stops the answer and forgets the question (the chat goes on)."""
        question = {"role": "user", "content": text}
        words: list[str] = []
        try:
            for word in self._stream([*self.messages, question]):
                words.append(word)
                sys.stdout.write(shown(word))
                sys.stdout.flush()
        except KeyboardInterrupt:
            if not interactive:
                raise
            print()
            return
        print("\n" if interactive else "")  # a blank line between turns on a terminal
        self.messages += [question, {"role": "assistant", "content": "".join(words)}]

    def _stream(self, messages: list[dict[str, str]]) -> Iterator[str]:
        import openai  # present: _openai() made the client

        try:
            stream = self._openai.chat.completions.create(
                model=self._model, messages=messages, stream=True
            )
            with stream:  # closed however it ends (Ctrl-C too): the server stops the answer
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        yield chunk.choices[0].delta.content
        except openai.APIStatusError as exc:
            raise ApiError(exc.status_code, _detail(exc)) from None
        except openai.APIConnectionError as exc:
            raise CommandError(unreachable(self._url, exc)) from None
        except openai.APIError as exc:  # an error event in the stream: a load that failed
            raise CommandError(f"the answer ended with an error: {exc.message}") from None


def _openai(client: Client) -> Any:
    try:
        return client.openai()
    except ImportError:
        raise CommandError(NEEDS_OPENAI) from None


def _detail(exc: Any) -> str:
    """The server's message in an openai error (its body is OpenAI's `error` object)."""
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.message)


def _messages(interactive: bool) -> Iterator[str]:
    """What the user types, a message a line, until Ctrl-D (or the input's end). On a
    terminal Ctrl-C drops the line being typed, as a shell does: only /exit and Ctrl-D
    leave."""
    if not interactive:
        yield from filter(None, (line.strip() for line in sys.stdin))
        return
    import readline  # noqa: F401  line editing and history for input()

    while True:
        try:
            line = input(">>> ").strip()
        except KeyboardInterrupt:
            print()
            continue
        except EOFError:
            print()
            return
        if line:
            yield line
