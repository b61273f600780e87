"""Huh (2020) Sec. 6, Figs 4 and 5: a depth-4 deep linear student learns a rank-3 teacher
from P = N = 16 noisy, whitened samples under SGD, NGD, sqrt-NGD, NGD-d and sqrt-NGD-d.

Run:  python examples/teacher_student.py            (about 1-2 minutes on 2 CPU cores)
Same: arraycurv teacher-student --out results/teacher-student

Writes fig4.png, fig5.png, summary.json and history.npz, then prints what the paper
claims and whether this run shows it. ``run`` is ``run_one(config)`` (pure: it returns
the record and writes nothing) followed by ``report([record], out_dir)``.
"""

from threadpoolctl import threadpool_limits  # ships with scikit-learn

from arraycurv.experiments import huh_teacher_student as teacher_student

config = teacher_student.Config(  # = TeacherStudentConfig, validated when built
    depth=4,  # weight matrices of the student
    width=16,  # N: input = hidden = output width
    rank=3,  # rank of the teacher map
    eta_bar=0.2,  # depth-calibrated rate: rule with power 1/q uses eta_bar / d^(1 - 1/q)  (Huh eq 17)
    damping=1e-5,  # Levenberg-Marquardt damping of NGD (damping_d: of NGD-d) (Huh Sec. 6)
    clip=0.1,  # update-speed clipping of NGD, NGD-d (max update norm per iteration)
    steps=10000,  # rules stop early once converged (tol); SGD uses them all
)
with threadpool_limits(limits=1, user_api="blas"):  # 256 x 256 matrices: one BLAS thread is fastest
    summary = teacher_student.run(config, "results/teacher-student")  # xp=<cupy namespace> for the GPU

for claim, holds in summary["claims"].items():
    print(f"{claim:40s} {holds}")
