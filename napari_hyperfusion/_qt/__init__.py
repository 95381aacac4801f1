"""The napari panel (Qt). The only subpackage that imports Qt; everything it
shows is computed by the UI-free layers below it."""
