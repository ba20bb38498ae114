//! Which launcher, if any, started this process as one of several ranks,
//! from the variables it sets (OpenMPI's `mpirun`, MPICH/Intel MPI's
//! Hydra, Slurm's `srun`).

/// A launcher that started this process as one rank of several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launcher {
    /// `mpirun (OpenMPI)`, `mpiexec (MPICH/Hydra)` or `srun (Slurm)`.
    pub name: &'static str,
    /// This process's rank.
    pub rank: usize,
    /// Ranks in all.
    pub world: usize,
    /// Its rank among the ranks on its machine.
    pub local_rank: usize,
}

/// The launcher of this process when it is one of several ranks, read from
/// `env` (e.g. `|k| std::env::var(k).ok()`); `None` for a lone process
/// (including `mpirun -np 1`).
///
/// ```
/// use ferroflow_dist::detect_launcher;
/// let env = |k: &str| match k {
///     "OMPI_COMM_WORLD_RANK" => Some("1".to_string()),
///     "OMPI_COMM_WORLD_SIZE" => Some("4".to_string()),
///     "OMPI_COMM_WORLD_LOCAL_RANK" => Some("1".to_string()),
///     _ => None,
/// };
/// let l = detect_launcher(env).unwrap();
/// assert_eq!((l.rank, l.world, l.local_rank), (1, 4, 1));
/// assert!(detect_launcher(|_| None).is_none());
/// ```
pub fn detect_launcher(env: impl Fn(&str) -> Option<String>) -> Option<Launcher> {
    let num = |k: &str| env(k).and_then(|v| v.trim().parse::<usize>().ok());
    // (name, rank, size, local rank) variables, most specific first: an
    // mpirun inside a Slurm allocation sets both its own and Slurm's.
    let kinds: [(&'static str, &str, &str, &str); 3] = [
        ("mpirun (OpenMPI)", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
        ("mpiexec (MPICH/Hydra)", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
        // SLURM_STEP_NUM_TASKS, not SLURM_NTASKS: a batch script's own shell
        // has SLURM_NTASKS of the allocation but is one process.
        ("srun (Slurm)", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"),
    ];
    kinds.into_iter().find_map(|(name, rank, size, local)| {
        let (rank, world) = (num(rank)?, num(size)?);
        (world > 1).then(|| Launcher { name, rank, world, local_rank: num(local).unwrap_or(0) })
    })
}
