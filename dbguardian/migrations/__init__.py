"""Migration directories: their layout (``layout``), the lint (``lint``) and the up/down/up test (``runner``)."""
