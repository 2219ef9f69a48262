"""One module per VLM family: builds the virtual layout from the processor's output and drives
the vision and language sides (llava: LLaVA-1.5; llava_onevision: LLaVA-OneVision)."""
