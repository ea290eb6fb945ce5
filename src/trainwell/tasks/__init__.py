"""Task packs shipped with trainwell (the engine never imports them)."""
