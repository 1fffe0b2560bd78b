"""A character-level tokenizer with LLaDA's special tokens and chat layout, for the tiny models.

Every printable ASCII character, newline and tab is one token; anything else maps to `<unk>`.
The special tokens use LLaDA-8B-Instruct's strings (docs/llada.md "Tokens"), each a single id,
so prompts rendered for the tiny models have the same structure as for the real one.
Like LLaDA's tokenizer it does not add `<|startoftext|>` by itself; the chat template does.
"""

from __future__ import annotations

import string

from tokenizers import AddedToken, Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

MASK_TOKEN = "<|mdm_mask|>"
EOS_TOKEN = "<|endoftext|>"  # also the pad token, as in LLaDA
BOS_TOKEN = "<|startoftext|>"
START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
EOT_TOKEN = "<|eot_id|>"
UNK_TOKEN = "<unk>"

# Ids 0..6, in this order; the characters follow.
SPECIAL_TOKENS: tuple[str, ...] = (
    EOS_TOKEN,
    BOS_TOKEN,
    MASK_TOKEN,
    START_HEADER,
    END_HEADER,
    EOT_TOKEN,
    UNK_TOKEN,
)
CHARACTERS: str = "".join(chr(c) for c in range(0x20, 0x7F)) + "\n\t"
assert set(CHARACTERS) <= set(string.printable)

# LLaDA-8B-Instruct's template (reference tokenizer_config.json): bos before the first message,
# each message `<|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT|trim<|eot_id|>`, then the
# assistant header. The official template appends the assistant header unconditionally; here it
# follows `add_generation_prompt` (identical output when it is True, the sampling case), so SFT
# code can also render a finished conversation.
LLADA_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.index0 == 0 -%}{{ bos_token }}{%- endif -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + (message['content'] | trim) + '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif -%}"
)


def build_tokenizer(*, chat_template: bool = True) -> PreTrainedTokenizerFast:
    """The built-in character-level tokenizer (vocab: 7 special tokens + 97 characters).

    `mask_token` is `<|mdm_mask|>`, eos = pad = `<|endoftext|>`, bos = `<|startoftext|>`,
    `<|start_header_id|>`, `<|end_header_id|>`, `<|eot_id|>` are extra special tokens.
    No bos/eos is added on encode. Round-trips through save_pretrained / AutoTokenizer offline.
    `chat_template=False` leaves out LLaDA's chat template (a base model's tokenizer).
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARACTERS:
        vocab[ch] = len(vocab)
    # BPE without merges and without a pre-tokenizer = one token per character, unknown -> unk.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    core.decoder = decoders.Fuse()  # concatenate characters back, no spaces inserted
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        mask_token=MASK_TOKEN,
        extra_special_tokens=[START_HEADER, END_HEADER, EOT_TOKEN],
        chat_template=LLADA_CHAT_TEMPLATE if chat_template else None,
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000,
    )
    return tok


__all__ = [
    "BOS_TOKEN",
    "CHARACTERS",
    "EOS_TOKEN",
    "EOT_TOKEN",
    "LLADA_CHAT_TEMPLATE",
    "MASK_TOKEN",
    "SPECIAL_TOKENS",
    "UNK_TOKEN",
    "build_tokenizer",
]
