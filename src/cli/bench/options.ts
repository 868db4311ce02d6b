/**
 * What a benchmark run is asked to do (`BenchOptions`, from the flags: command.ts) and where it
 * is (`Progress`, for the progress line). Shapes only.
 */

/** What to run. */
export interface BenchOptions {
  readonly streams: number
  readonly items: number
  readonly itemSize: number
  readonly delayMs: number
  readonly concurrency: ReadonlyArray<number>
  /** Least seconds of warm-up streams before each concurrency level. */
  readonly warmupSecs: number
  /** Least streams of warm-up per level (V8 tiers code up by calls, not time). */
  readonly warmupStreams: number
  /** Most seconds of warm-up: the warm-up goes on past `warmupSecs` and `warmupStreams` while throughput still rises. */
  readonly warmupMaxSecs: number
  /** Least seconds of each measured level: more streams than `streams` when the level runs faster. */
  readonly measureSecs: number
  /**
   * Node/V8 flags given to every router and worker process, this project's and the baselines'
   * alike (this project's processes also turn allocation-site pretenuring off themselves, as the
   * `transport-registry` program does: `NodeTuning.ts`).
   */
  readonly nodeFlags: ReadonlyArray<string>
  /** `--modes`: row ids, presets, prefixes with `*`. */
  readonly modes: string
  readonly quick: boolean
  /** Time limit of one row, seconds. */
  readonly rowTimeoutS: number
  /** Rounds: every row is measured this many times, round after round, and its samples pooled. */
  readonly rounds: number
  /**
   * Slices per level when above 1: each baseline runs beside the rows measured against it, their
   * measured streams split into this many slices taken in turn (`runGroup`); 1 runs row after row.
   */
  readonly interleave: number
  /** Where each child process writes a V8 CPU profile (`node --cpu-prof`), if anywhere. */
  readonly cpuProfDir?: string | undefined
}

/** Where a run is, for the progress line. */
export interface Progress {
  readonly row: string
  readonly index: number
  readonly total: number
  readonly round: number
  readonly rounds: number
  readonly phase: string
  readonly done?: number
  readonly of?: number
}
