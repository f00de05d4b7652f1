"""The `openai` Python package against `edgellm serve` over its Unix socket.

Usage: openai_client.py SOCKET QUESTION PROMPT MAX_TOKENS

Runs a chat completion, a streamed chat completion with usage, and a completion, all at
temperature 0, and prints one JSON object with what came back.
"""
import json
import sys

import httpx
import openai


def main():
    sock, question, prompt, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    client = openai.OpenAI(
        base_url="http://localhost/v1",
        api_key="none",
        http_client=httpx.Client(transport=httpx.HTTPTransport(uds=sock)),
        max_retries=0,
        timeout=120,
    )
    messages = [{"role": "user", "content": question}]

    chat = client.chat.completions.create(
        model="anything", messages=messages, temperature=0, max_tokens=max_tokens
    )

    stream = client.chat.completions.create(
        model="anything",
        messages=messages,
        temperature=0,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, roles, finish, usage, n_chunks = [], [], None, None, 0
    for chunk in stream:
        n_chunks += 1
        if chunk.usage is not None:
            usage = chunk.usage.model_dump()
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason

    completion = client.completions.create(
        model="anything", prompt=prompt, temperature=0, max_tokens=max_tokens
    )
    models = client.models.list()

    print(
        json.dumps(
            {
                "chat": chat.choices[0].message.content,
                "chat_model": chat.model,
                "chat_finish": chat.choices[0].finish_reason,
                "chat_usage": chat.usage.model_dump(),
                "stream_text": "".join(pieces),
                "stream_roles": roles,
                "stream_finish": finish,
                "stream_usage": usage,
                "stream_chunks": n_chunks,
                "completion": completion.choices[0].text,
                "completion_usage": completion.usage.model_dump(),
                "models": [m.id for m in models.data],
            }
        )
    )


if __name__ == "__main__":
    main()
