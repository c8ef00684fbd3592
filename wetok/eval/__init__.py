"""Evaluation, kept apart from the codec: ``wetok eval`` as a library.

* :mod:`wetok.eval.evaluate`: runs wetok models and classic codecs over a set of images (records, report).
* :mod:`wetok.eval.stats`: set-level statistics: perceptual scorer, FID / KID features, codebook usage.
* :mod:`wetok.eval.classic`: JPEG, WebP, AVIF, JPEG 2000 through Pillow, and size matching.
* :mod:`wetok.eval.report`: tables, RD plot and crops figure.
* :mod:`wetok.eval.html`: ``report.html``, the page with before/after sliders (``--html``, ``--compare``).

The image-quality metrics shared with training live outside this package: :mod:`wetok.metrics` (PSNR,
SSIM, MS-SSIM, Fréchet distance, KID) and :mod:`wetok.perceptual` (the perceptual networks, also the
training loss). Nothing in the codec (``wetok.codec``, ``format``, ``entropy``, ``prior``, ``zoo``)
imports this package; tests/test_packaging.py checks it.
"""
