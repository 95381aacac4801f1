"""napari alone (no plugin): segmentation fault in vispy's glDrawArrays.

Two 3D image layers, a large uint8 one and a small float32 one; remove the
large one, add another large one: the next draw crashes (every run, napari
0.9.2, vispy 0.17.0, PyOpenGL 3.1.10, Mesa 22.3.6 llvmpipe under Xvfb,
Python 3.11, PyQt6). The blending and a mirrored affine do not matter; not
removing the first layer avoids it.

    xvfb-run -a python napari_segfault_repro.py                 # crashes
    xvfb-run -a python napari_segfault_repro.py remove=0        # no crash

Options: mirror=0/1 (the small layer's x axis mirrored), remove=0/1,
blending=additive|translucent|translucent_no_depth.
"""

import faulthandler
import sys
import time

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

faulthandler.enable()
args = dict(a.split("=") for a in sys.argv[1:])
mirror, remove = args.get("mirror", "1") == "1", args.get("remove", "1") == "1"
rng = np.random.default_rng(0)
viewer = napari.Viewer()


def pump(t=0.5):
    end = time.time() + t
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.005)


scan = (rng.random((80, 96, 80)) * 255).astype(np.uint8)
viewer.add_image(scan, name="scan", scale=(1.8, 1.8, 1.8), translate=(-71.5, -106.0, -62.5))
affine = np.diag([-2.0 if mirror else 2.0, 2.0, 2.0, 1.0])
affine[:3, 3] = [-1.8, -53.5, -34.9]
viewer.add_image(
    rng.random((24, 32, 24)).astype(np.float32),
    name="overlay",
    affine=affine,
    blending=args.get("blending", "additive"),
)
pump()
if remove:
    viewer.layers.remove("scan")
    pump()
viewer.add_image(scan, name="another", scale=(1.8, 1.8, 1.8), translate=(-71.5, -106.0, -62.5))
pump(2)
print("no crash")
