"""sana15's library. Importing it mutes two third-party log lines that every command printed and that say nothing
about this project's runs:

- diffusers' "Expected types for text_encoder: (Gemma2PreTrainedModel,), got BertModel" on every model-folder load:
  SanaPipeline annotates its text encoder as Gemma-2, and the CPU profiles store the MiniLM `BertModel` there on
  purpose (docs: stack-notes §5); the pipeline works with it (tests/test_sampling.py loads it in stock SanaPipeline).
  Only that exact message (text_encoder, got BertModel) is dropped; every other diffusers warning passes.
- bitsandbytes' CPU backend, on AVX512-BF16 CPUs, tries to fetch a 4-bit GEMM kernel from the Hub through the
  optional `kernels` package and logs "Failed to load CPU gemm_4bit_forward ... pip install kernels" on every import.
  sana15 uses only bitsandbytes' 8-bit optimizer and blockwise-quantisation kernels (no 4-bit GEMM), and nothing
  may be downloaded at run time, so that logger is set to ERROR.
"""
import logging


class _DropBertTextEncoderTypeWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Expected types for text_encoder:") and ".BertModel'>" in msg.rsplit(" got ", 1)[-1])


logging.getLogger("diffusers.pipelines.pipeline_utils").addFilter(_DropBertTextEncoderTypeWarning())
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
