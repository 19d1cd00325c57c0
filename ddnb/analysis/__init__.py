"""The paper's analyses as functions from tensors (and trained networks) to plain results.

- ``substitution``: section 3 (mixing real images in, real-trained models on distilled sets, pixels, features)
- ``dynamics``: section 4 (model pools, agreement, recognition during real training)
- ``curvature``: section 4 (Hessian trace and top eigenvalues along early real training)
- ``influence``: section 5 (leave-one-out and approximations of each distilled image's influence)
- ``semantics``: section 5 (attributes of the most-influenced test images)

Each module computes and returns; none reads or writes the store (``ddnb.sections`` keeps the results as jobs).
"""
