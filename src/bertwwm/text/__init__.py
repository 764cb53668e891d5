"""Text -> words -> tokens: corpus readers, word segmenters, the Chinese WordPiece vocabulary, word-start flags."""
