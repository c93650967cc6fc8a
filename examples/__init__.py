"""Runnable examples of reading nodes through `resources.reader.SeamlessReader`."""
