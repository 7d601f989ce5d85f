// Grafana's published dashboard types (npm @grafana/schema), narrowed as far as the package allows, for the
// dashboard's type check (grafana_schema.py writes each dashboard as an object literal that must satisfy
// CheckedDashboard, and Dashboard too).
//
// The package types a panel as `type: string` with `options` and `fieldConfig.defaults.custom` as
// Record<string, unknown>, and its targets as records: on its own it would let any panel type and any misspelt
// option through. Here each core panel plugin's own Options and FieldConfig (the panelcfg types the package
// ships) type its panel, keyed by its plugin id, so a panel of any other type fails and so does an unknown
// option. Targets stay records past the fields every query has (refId, datasource, hide): the package has no
// Prometheus query type, so a misspelt expr is for the Python checks to find.
import type { Dashboard, DataQuery } from "@grafana/schema";
import type * as raw from "@grafana/schema/dist/esm/raw/dashboard/x/Dashboard_types.gen";
import type * as annolist from "@grafana/schema/dist/esm/raw/composable/annotationslist/panelcfg/x/AnnotationsListPanelCfg_types.gen";
import type * as barchart from "@grafana/schema/dist/esm/raw/composable/barchart/panelcfg/x/BarChartPanelCfg_types.gen";
import type * as bargauge from "@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen";
import type * as candlestick from "@grafana/schema/dist/esm/raw/composable/candlestick/panelcfg/x/CandlestickPanelCfg_types.gen";
import type * as canvas from "@grafana/schema/dist/esm/raw/composable/canvas/panelcfg/x/CanvasPanelCfg_types.gen";
import type * as dashlist from "@grafana/schema/dist/esm/raw/composable/dashboardlist/panelcfg/x/DashboardListPanelCfg_types.gen";
import type * as gauge from "@grafana/schema/dist/esm/raw/composable/gauge/panelcfg/x/GaugePanelCfg_types.gen";
import type * as geomap from "@grafana/schema/dist/esm/raw/composable/geomap/panelcfg/x/GeomapPanelCfg_types.gen";
import type * as heatmap from "@grafana/schema/dist/esm/raw/composable/heatmap/panelcfg/x/HeatmapPanelCfg_types.gen";
import type * as histogram from "@grafana/schema/dist/esm/raw/composable/histogram/panelcfg/x/HistogramPanelCfg_types.gen";
import type * as logs from "@grafana/schema/dist/esm/raw/composable/logs/panelcfg/x/LogsPanelCfg_types.gen";
import type * as news from "@grafana/schema/dist/esm/raw/composable/news/panelcfg/x/NewsPanelCfg_types.gen";
import type * as nodegraph from "@grafana/schema/dist/esm/raw/composable/nodegraph/panelcfg/x/NodeGraphPanelCfg_types.gen";
import type * as piechart from "@grafana/schema/dist/esm/raw/composable/piechart/panelcfg/x/PieChartPanelCfg_types.gen";
import type * as stat from "@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen";
import type * as statetimeline from "@grafana/schema/dist/esm/raw/composable/statetimeline/panelcfg/x/StateTimelinePanelCfg_types.gen";
import type * as statushistory from "@grafana/schema/dist/esm/raw/composable/statushistory/panelcfg/x/StatusHistoryPanelCfg_types.gen";
import type * as table from "@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen";
import type * as text from "@grafana/schema/dist/esm/raw/composable/text/panelcfg/x/TextPanelCfg_types.gen";
import type * as timeseries from "@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen";
import type * as trend from "@grafana/schema/dist/esm/raw/composable/trend/panelcfg/x/TrendPanelCfg_types.gen";
import type * as xychart from "@grafana/schema/dist/esm/raw/composable/xychart/panelcfg/x/XYChartPanelCfg_types.gen";

// A type as JSON holds it: the package's string enums (a nominal type in TypeScript) as their string values.
export type Json<T> = T extends string ? `${T}`
  : T extends readonly (infer E)[] ? Json<E>[]
  : T extends object ? { [K in keyof T]: Json<T[K]> }
  : T;

// A plugin's options and custom field config as a dashboard saves them: only what differs from the plugin's
// defaults, so every field is optional (the types mark required what the plugin always fills in), none unknown.
type Saved<T> = T extends string ? `${T}`
  : T extends readonly (infer E)[] ? Saved<E>[]
  : T extends object ? { [K in keyof T]?: Saved<T[K]> }
  : T;

type FieldConfigSource<Custom> = Omit<raw.FieldConfigSource, "defaults"> & {
  defaults: Omit<raw.FieldConfig, "custom"> & { custom?: Saved<Custom> };
};

type PluginPanel<Type extends string, Options, Custom = Record<string, unknown>> =
  Omit<raw.Panel, "type" | "options" | "fieldConfig" | "targets"> & {
    type: Type;
    options?: Saved<Options>;
    fieldConfig?: FieldConfigSource<Custom>;
    targets?: Array<DataQuery & Record<string, unknown>>;
  };

// The core panel plugins the package has types for, by plugin id.
type CorePanel =
  | PluginPanel<"annolist", annolist.Options>
  | PluginPanel<"barchart", barchart.Options, barchart.FieldConfig>
  | PluginPanel<"bargauge", bargauge.Options>
  | PluginPanel<"candlestick", candlestick.Options, candlestick.FieldConfig>
  | PluginPanel<"canvas", canvas.Options>
  | PluginPanel<"dashlist", dashlist.Options>
  | PluginPanel<"gauge", gauge.Options>
  | PluginPanel<"geomap", geomap.Options>
  | PluginPanel<"heatmap", heatmap.Options, heatmap.FieldConfig>
  | PluginPanel<"histogram", histogram.Options, histogram.FieldConfig>
  | PluginPanel<"logs", logs.Options>
  | PluginPanel<"news", news.Options>
  | PluginPanel<"nodeGraph", nodegraph.Options>
  | PluginPanel<"piechart", piechart.Options, piechart.FieldConfig>
  | PluginPanel<"stat", stat.Options>
  | PluginPanel<"state-timeline", statetimeline.Options, statetimeline.FieldConfig>
  | PluginPanel<"status-history", statushistory.Options, statushistory.FieldConfig>
  | PluginPanel<"table", table.Options, table.FieldConfig>
  | PluginPanel<"text", text.Options>
  | PluginPanel<"timeseries", timeseries.Options, timeseries.FieldConfig>
  | PluginPanel<"trend", trend.Options, trend.FieldConfig>
  | PluginPanel<"xychart", xychart.Options, xychart.FieldConfig>;

type RowPanel = Omit<raw.RowPanel, "panels"> & { panels: CorePanel[] };

// A query variable's `definition` (its query as the variable editor shows it): Grafana saves it, the published
// schema leaves it out.
type VariableModel = raw.VariableModel & { definition?: string };

export type CheckedDashboard = Json<Omit<raw.Dashboard, "panels" | "templating"> & {
  panels?: Array<CorePanel | RowPanel>;
  templating?: { list?: VariableModel[] };
}>;

// The package's own Dashboard, the one its index exports.
export type PublishedDashboard = Json<Dashboard>;
