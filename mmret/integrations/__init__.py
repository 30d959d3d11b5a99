"""Bridges from mmret's library to other training code (``open_clip_train``, ...).

Each integration lives in its own subpackage and imports the foreign trainer lazily, so
``import mmret`` never needs it installed.
"""
