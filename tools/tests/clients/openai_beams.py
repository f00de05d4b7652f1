"""The `openai` Python package asking `edgellm serve` for beam search over its Unix socket.

Usage: openai_beams.py SOCKET QUESTION MAX_TOKENS

Sends a chat completion with `extra_body={"beams": 4, "n": 2}` (the extension rides in the body,
as the package passes unknown fields) and prints one JSON object with what came back.
"""
import json
import sys

import httpx
import openai


def main():
    sock, question, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = openai.OpenAI(
        base_url="http://localhost/v1",
        api_key="none",
        http_client=httpx.Client(transport=httpx.HTTPTransport(uds=sock)),
        max_retries=0,
        timeout=120,
    )
    chat = client.chat.completions.create(
        model="anything",
        messages=[{"role": "user", "content": question}],
        max_tokens=max_tokens,
        n=2,
        extra_body={"beams": 4},
    )
    print(
        json.dumps(
            {
                "texts": [c.message.content for c in chat.choices],
                "finish": [c.finish_reason for c in chat.choices],
                # Extension fields the package keeps in the choice's extras.
                "scores": [c.model_extra.get("beam_score") for c in chat.choices],
                "usage": chat.usage.model_dump(),
            }
        )
    )


if __name__ == "__main__":
    main()
