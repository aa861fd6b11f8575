/** lib/monitor: the live dashboard (training and serving), /metrics, `kiln dashboard` run files, and the benchmark report. */
export { Dashboard, DEFAULT_DASHBOARD_PORT, type DashboardOptions, attachServingDashboard, attachTrainingDashboard, dashboardToken, startDashboard } from './dashboard.js';
export { DashboardMetrics } from './prometheus.js';
export { ServingFeed, type ServingSample, type ServingSource, percentile } from './serving.js';
export { type RunStatus, type TrainingPoint, TrainingRun, toTrainingPoint } from './training.js';
export { MetricsFollower, openRuns, plannedSteps } from './runs.js';
export { type LoadedResult, loadResults, renderReport, writeReport } from './report/index.js';
